-- wrk script for tests/bench/bench.sh: POST the recovery JWK in $BENCH_REC_BODY
-- to the URL given on wrk's command line (http://HOST:PORT/rec/KID).
-- Non-2xx answers are counted by wrk itself ("Non-2xx or 3xx responses: N"),
-- which costs nothing per request, unlike a Lua response() hook.

local path = os.getenv("BENCH_REC_BODY")
if path == nil or path == "" then
   error("BENCH_REC_BODY is not set")
end
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/jwk+json"
