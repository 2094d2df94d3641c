-- One PostgreSQL server, one database per service (run once, by the postgres image's entrypoint
-- and by tests/test_stack_postgres.py).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
