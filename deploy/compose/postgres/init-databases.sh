#!/bin/sh
# First start of the stack's PostgreSQL (docker-entrypoint-initdb.d): two databases, each owned
# by its own role, neither open to the other: `mlflow` (the tracking server's runs and registry)
# and `carprice` (the API's users, keys and prediction log). Passwords come from the
# environment through psql variables, so no quoting in them can break the SQL.
set -eu
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD is not set}"
mlflow_db="${MLFLOW_DB_NAME:-mlflow}"
carprice_db="${APP_DB_NAME:-carprice}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v mlflow_db="$mlflow_db" -v mlflow_pw="$MLFLOW_DB_PASSWORD" \
  -v carprice_db="$carprice_db" -v carprice_pw="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE :"mlflow_db" LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_db";
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
CREATE ROLE :"carprice_db" LOGIN PASSWORD :'carprice_pw';
CREATE DATABASE :"carprice_db" OWNER :"carprice_db";
REVOKE ALL ON DATABASE :"carprice_db" FROM PUBLIC;
SQL
echo "created databases $mlflow_db and $carprice_db, each with its own role"
