-- The postgraphile target of bench/graphql.py, run after the tables of the kit's postgrest
-- target (targets/postgrest.py, SCHEMA_SQL: users, posts with author REFERENCES users(id))
-- were created and loaded with the dataset.
SET client_min_messages = warning;

-- The caller, from the verified JWT: PostGraphile's lazy-jwt preset puts every claim into
-- jwt.claims.<name> (SET LOCAL for the request's transaction); the kit's token has
-- sub = the bench user's id. (PostgREST's version of this function reads request.jwt.claims.)
CREATE OR REPLACE FUNCTION auth.user_id() RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('jwt.claims.sub', true), '') $$;
-- PostgREST's W0 health() is not needed here (it would be a query field in the schema).
DROP FUNCTION public.health();

CREATE UNIQUE INDEX idx_posts_slug ON posts (slug);
CREATE INDEX idx_posts_status_created ON posts (status, created);

-- The kit's rules as row-level security, for the role the JWT names.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE posts ENABLE ROW LEVEL SECURITY;
-- view / list: status = 'published' OR author = caller
CREATE POLICY posts_select ON posts FOR SELECT TO bench_gql_user
  USING (status = 'published' OR author = (SELECT auth.user_id()));
-- create: caller is logged in AND author = caller (not used by the GraphQL workloads)
CREATE POLICY posts_insert ON posts FOR INSERT TO bench_gql_user
  WITH CHECK ((SELECT auth.user_id()) IS NOT NULL AND author = (SELECT auth.user_id()));
-- users: any signed-in caller may read users (the author relation's id and email); the same
-- rule bench/graphql.py gives ferrobase's users resource (view/list "@auth.id != null").
CREATE POLICY users_select ON users FOR SELECT TO bench_gql_user
  USING ((SELECT auth.user_id()) IS NOT NULL);

-- Grants: the authenticator itself (no JWT) may do nothing; bench_gql_user reads posts and
-- users and may insert posts (id, created and updated come from the defaults).
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public, auth FROM PUBLIC;
GRANT USAGE ON SCHEMA public, auth TO bench_gql_user;
GRANT EXECUTE ON FUNCTION auth.user_id() TO bench_gql_user;
GRANT SELECT ON posts, users TO bench_gql_user;
GRANT INSERT (title, slug, content, status, author) ON posts TO bench_gql_user;
