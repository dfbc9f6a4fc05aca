-- Cluster-wide roles of the postgraphile target of bench/graphql.py: created if missing,
-- left in place (like the kit's postgrest roles). PostGraphile logs in as the authenticator
-- and, per request, switches to the JWT's role (SET LOCAL role, PostGraphile's lazy-jwt
-- preset), which row-level security applies to.
DO $$
BEGIN
  BEGIN CREATE ROLE bench_gql_user NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE ROLE bench_gql_authenticator LOGIN NOINHERIT; EXCEPTION WHEN duplicate_object THEN NULL; END;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname IN ('bench_gql_user', 'bench_gql_authenticator')
             AND (rolsuper OR rolbypassrls)) THEN
    RAISE EXCEPTION 'role bench_gql_user or bench_gql_authenticator is a superuser or bypasses RLS';
  END IF;
END $$;
ALTER ROLE bench_gql_authenticator LOGIN NOINHERIT;
SET client_min_messages = warning;  -- "role is already a member" notices on later runs
GRANT bench_gql_user TO bench_gql_authenticator;
