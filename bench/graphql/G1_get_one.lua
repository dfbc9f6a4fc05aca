-- G1 get-one: POST a GraphQL query for one post by id (with its author), authenticated.
-- Ids are drawn uniformly from BENCH_IDS_FILE (posts the bench user may view) with the
-- kit's per-thread seed (BENCH_SEED + 7919 * thread), so every target gets the same rows
-- in the same order; every {id} in BENCH_GQL_BODY is replaced by the id.
local c = dofile(os.getenv("BENCH_GQL_DIR") .. "/common.lua")
setup = c.gql_setup
response = c.gql_response
done = c.gql_done

function init(args)
  ids = {}
  for line in io.lines(c.env("BENCH_IDS_FILE")) do
    if line ~= "" then ids[#ids + 1] = line end
  end
  if #ids == 0 then error("BENCH_IDS_FILE is empty") end
  path = c.env("BENCH_PATH")
  parts = c.split(c.env("BENCH_GQL_BODY"), "{id}")
  headers = c.gql_headers()
  math.randomseed(tonumber(c.env("BENCH_SEED", "1")) + 7919 * (tid or 0))
end

function request()
  return wrk.format("POST", path, headers, table.concat(parts, ids[math.random(#ids)]))
end
