-- Analyst queries over the Postgres materialization (SPEC section 5).
-- Parameters are psycopg-style `%(name)s` placeholders; `load_queries` in
-- materializations/postgres.py reads this file by the `-- name:` lines.
-- Tables are unqualified: set `search_path` to the materialization's schema.

-- name: segment_members
-- Who is in a vendor's segment right now, with when they first joined and their value.
select user_id, first, last, value
from segment_memberships
where vendor = %(vendor)s and segment_name = %(segment)s and member
order by user_id;

-- name: user_segments
-- Every segment a user is in (active) or has left (past), active first.
select vendor, segment_name, member as active, first, last, value
from segment_memberships
where user_id = %(user)s
order by member desc, vendor, segment_name;

-- name: active_segments_for_users
-- The segments each user in a range of user ids is currently a member of.
select
    user_id,
    (arr->'segment'->>'vendor')::int as vendor,
    arr->'segment'->>'name' as segment_name,
    arr->>'value' as value
from segment_profiles, json_array_elements(segments) as arr
where user_id between %(user_from)s and %(user_to)s
    and (arr->>'member')::boolean
order by user_id, vendor, segment_name;

-- name: recent_toggles
-- The latest changes of membership (joins and leaves), newest first.
select timestamp, event, vendor, segment_name, user_id, remove, previous_event
from segment_toggles
order by timestamp desc, event
limit %(limit)s;

-- name: segment_sizes
-- For each vendor's segments: how many users are members now and how many were ever seen.
select
    vendor,
    segment_name,
    count(*) filter (where member) as members,
    count(*) as ever_seen
from segment_memberships
group by vendor, segment_name
order by vendor, segment_name;
