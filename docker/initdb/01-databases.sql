-- Run once by the postgres image on an empty data volume (as POSTGRES_USER, a superuser).
-- One database per store: `optuna` (the Optuna storage) and `mlflow` (the tracking server).
-- POSTGRES_DB already creates `optuna`; both statements are idempotent (psql's \gexec).
SELECT 'CREATE DATABASE optuna'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'optuna')\gexec
SELECT 'CREATE DATABASE mlflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')\gexec
