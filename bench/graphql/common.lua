-- Shared by bench/graphql.py's wrk scripts (loaded with dofile from each of them). On top of
-- the kit's wrk/common.lua (BENCH_WRK_DIR: env parameters, per-thread id, result line) it
-- reads every response and counts what wrk itself does not count as an error:
--   non200      any status other than 200 (wrk counts only status >= 400)
--   gql_errors  a 200 whose JSON body has an "errors" member (a GraphQL error, e.g. a
--               refused or failed field; GraphQL servers answer those with 200)
-- Both are printed as one more line, BENCH_GQL {"non200": N, "gql_errors": N}.
-- Parameters (environment, set by bench/graphql.py):
--   BENCH_TOKEN, BENCH_HEADERS, BENCH_SEED, BENCH_IDS_FILE  as in the kit
--   BENCH_PATH      the GraphQL endpoint's path
--   BENCH_GQL_BODY  the JSON request body; G1 replaces every {id} per request
local c = dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

local threads = {}

-- Runs in the main Lua state for every thread: the kit's thread id, and keep the thread so
-- done() can read its counters.
function c.gql_setup(thread)
  c.setup(thread)
  threads[#threads + 1] = thread
end

-- Per-thread counters (globals of each thread's Lua state).
non200 = 0
gql_errors = 0

function c.gql_response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  elseif body and string.find(body, '"errors"%s*:') then
    gql_errors = gql_errors + 1
  end
end

function c.gql_done(summary, latency, requests)
  c.done(summary, latency, requests)
  local n, g = 0, 0
  for _, t in ipairs(threads) do
    n = n + (t:get("non200") or 0)
    g = g + (t:get("gql_errors") or 0)
  end
  io.write(string.format('BENCH_GQL {"non200":%d,"gql_errors":%d}\n', n, g))
end

function c.gql_headers()
  return c.auth_headers({["Content-Type"] = "application/json", ["Accept"] = "application/json"})
end

return c
