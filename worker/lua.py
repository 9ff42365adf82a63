"""The job lifecycle's atomic steps, as Redis Lua scripts (used only by ``worker/jobs.py``).

Each step that changes a job checks, inside Redis, that the caller still holds it: a claimed job has a claim key
``<prefix>:claim:<id>`` whose value (the *token*, ``"<worker> <attempt>"``) is set when a worker starts it and
deleted when it ends or is put back. A worker that was presumed dead and comes back, or that finishes a job
after Redis lost it, finds its token gone and changes nothing. One script call per job, pipelined per batch:
one round trip for a whole batch's starts, progress updates or ends.

The scripts write the fields of rq's job hash that rq's own tools read (``status``, ``started_at``,
``ended_at``, ``worker_name``), the registries' sorted sets, and the service's own fields (``srgan``, the
job's JSON document; ``progress``; ``attempts``). They name keys outside ``KEYS`` (a job's hash and upload from
its id), so they run on a single Redis, not a cluster; rq does not run on a cluster either.
"""

from __future__ import annotations

__all__ = ["CLAIM", "PROGRESS", "SAVE", "END", "REQUEUE", "CANCEL", "WEBHOOK_CLAIM", "WEBHOOK_RECORD"]

# Claim up to ARGV[1] jobs for worker ARGV[2] and start them; return, for each, what the worker needs.
# KEYS[1] queue list, KEYS[2] this worker's claim list.
# ARGV: n, worker, now (rq's time format), job key prefix, claim key prefix, input key prefix ('' when uploads are
# not in Redis), claim TTL (s), a job id already moved to the claim list by a blocking BLMOVE ('' for none).
CLAIM = """
local out = {}
local n = tonumber(ARGV[1])
local first = ARGV[8]
for i = 1, n do
    local id
    if i == 1 and first ~= '' then id = first
    else id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') end
    if not id then break end
    local jk = ARGV[4] .. id
    if redis.call('HGET', jk, 'status') ~= 'queued' then
        redis.call('LREM', KEYS[2], 0, id)  -- expired, canceled, or a stale duplicate: not ours to run
    else
        local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
        redis.call('HSET', jk, 'status', 'started', 'started_at', ARGV[3], 'last_heartbeat', ARGV[3],
                   'worker_name', ARGV[2], 'progress', '0')
        redis.call('PERSIST', jk)
        local token = ARGV[2] .. ' ' .. attempts
        redis.call('SET', ARGV[5] .. id, token, 'EX', tonumber(ARGV[7]))
        local f = redis.call('HMGET', jk, 'srgan', 'created_at', 'enqueued_at')
        local upload = false
        if ARGV[6] ~= '' then upload = redis.call('GET', ARGV[6] .. id) end
        out[#out + 1] = {id, token, f[1] or '', f[2] or '', f[3] or '', upload}
    end
end
return out
"""

# Set a started job's progress, if the caller still holds it. KEYS[1] claim, KEYS[2] job; ARGV token, value.
PROGRESS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'progress', ARGV[2])
return 1
"""

# Write a started job's document and progress, if the caller still holds it. KEYS claim, job; ARGV token, document,
# progress.
SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'srgan', ARGV[2], 'progress', ARGV[3])
return 1
"""

# End a job (finished or failed), if the caller still holds it (or, with ARGV[1] = '', whoever does).
# KEYS: claim, job, claim list, registry, upload, result, rq worker, webhook queue ('' key names are skipped).
# ARGV: token, status, ended_at, document, job TTL, registry score, result bytes, result TTL, job id, channel,
# rq worker counter field, progress ('' keeps it), the webhook's due time.
END = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local fields = {'status', ARGV[2], 'ended_at', ARGV[3], 'srgan', ARGV[4]}
if ARGV[12] ~= '' then fields[#fields + 1] = 'progress'; fields[#fields + 1] = ARGV[12] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[9])
redis.call('DEL', KEYS[1])
if KEYS[3] ~= '' then redis.call('LREM', KEYS[3], 0, ARGV[9]) end
if KEYS[5] ~= '' then redis.call('DEL', KEYS[5]) end
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[7], 'EX', tonumber(ARGV[8])) end
if KEYS[7] ~= '' then redis.call('HINCRBY', KEYS[7], ARGV[11], 1) end
if KEYS[8] ~= '' then redis.call('ZADD', KEYS[8], 'NX', ARGV[13], ARGV[9]) end
redis.call('PUBLISH', ARGV[10], ARGV[9] .. ' ' .. ARGV[2])
return 1
"""

# Put a job back at the front of its queue: a started one if its claim still says ARGV[1] ('*': whatever it says,
# for a dead worker's job whose claim Redis lost), a claimed but never started one (ARGV[1] = '') if still queued.
# KEYS: claim, job, queue, the list it is taken off. ARGV: token, document, attempts change, job TTL, job id.
REQUEUE = """
local status = redis.call('HGET', KEYS[2], 'status')
if not status then redis.call('LREM', KEYS[4], 0, ARGV[5]); return 0 end
if ARGV[1] ~= '' then
    if status ~= 'started' then redis.call('LREM', KEYS[4], 0, ARGV[5]); return 0 end
    if ARGV[1] ~= '*' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    redis.call('HSET', KEYS[2], 'status', 'queued', 'started_at', '', 'worker_name', '', 'progress', '0',
               'srgan', ARGV[2])
    redis.call('HINCRBY', KEYS[2], 'attempts', tonumber(ARGV[3]))
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
    redis.call('DEL', KEYS[1])
elseif status ~= 'queued' then
    redis.call('LREM', KEYS[4], 0, ARGV[5]); return 0
end
redis.call('LREM', KEYS[4], 0, ARGV[5])
redis.call('LPUSH', KEYS[3], ARGV[5])
return 1
"""

# Cancel a job that no worker has taken: workers take ids off the queue list with LMOVE, so an id this LREM
# still removes was not taken, and the two cannot both win.
# KEYS: queue, job, upload ('' when not in Redis), canceled registry, webhook queue ('' for none). ARGV: job id,
# ended_at, document, TTL, registry score, channel, the webhook's due time.
CANCEL = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'status', 'canceled', 'ended_at', ARGV[2], 'srgan', ARGV[3])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
if KEYS[3] ~= '' then redis.call('DEL', KEYS[3]) end
if KEYS[5] ~= '' then redis.call('ZADD', KEYS[5], 'NX', ARGV[7], ARGV[1]) end
redis.call('PUBLISH', ARGV[6], ARGV[1] .. ' canceled')
return 1
"""

# Claim up to ARGV[3] webhook deliveries that are due (the queue's score is the due time): each one's due time
# moves to the lease's end (so a deliverer that dies gives it back to whoever looks after that) and the job's hash
# gets the claim token that fences the delivery's record. A job that has expired is dropped from the queue.
# KEYS[1] the webhook queue. ARGV: now, lease end, n, job key prefix, token. Returns {id, HGETALL of the job}.
WEBHOOK_CLAIM = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))) do
    local jk = ARGV[4] .. id
    if redis.call('EXISTS', jk) == 0 then
        redis.call('ZREM', KEYS[1], id)
    else
        redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
        redis.call('HSET', jk, 'webhook_claim', ARGV[5])
        out[#out + 1] = {id, redis.call('HGETALL', jk)}
    end
end
return out
"""

# Record a delivery attempt, if the caller's claim still stands: the job's delivery state, and the job taken off
# the webhook queue (ARGV[3] = '': delivered, or given up) or due again at ARGV[3].
# KEYS: webhook queue, job. ARGV: token, state (JSON), next due time or '', job id.
WEBHOOK_RECORD = """
if redis.call('HGET', KEYS[2], 'webhook_claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'webhook', ARGV[2])
redis.call('HDEL', KEYS[2], 'webhook_claim')
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[4]) else redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[4]) end
return 1
"""
