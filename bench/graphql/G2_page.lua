-- G2 page: POST one fixed GraphQL query, the first 20 published posts, newest first, each
-- with its author, no total count, authenticated (the list rule applies). Static request.
local c = dofile(os.getenv("BENCH_GQL_DIR") .. "/common.lua")
wrk.method = "POST"
wrk.path = c.env("BENCH_PATH")
wrk.headers = c.gql_headers()
wrk.body = c.env("BENCH_GQL_BODY")
setup = c.gql_setup
response = c.gql_response
done = c.gql_done
