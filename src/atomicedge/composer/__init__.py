"""The composer service: osbuild-composer's weldr API, a job queue and its workers."""
