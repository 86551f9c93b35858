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

-- Profile records (SPEC 8.5): one row per person; a merged record's row is gone.

-- name: record_of
-- A person's record found by their userId or by any of their devices (anonymousIds),
-- with its groups and properties. profile_records_devices maps every device of an
-- identified person to their record.
select id, user_id, anonymous_ids, groups, properties, invalid, created_at, updated_at
from profile_records
where id in (
    %(who)s,
    'anon:' || %(who)s,
    (select record_id from profile_records_devices where device = %(who)s)
);

-- name: record_properties
-- A record's properties one per row, each with its type in JSON and why a value was left out.
select p.key as property, p.value, jsonb_typeof(p.value) as json_type, invalid ->> p.key as invalid
from profile_records, jsonb_each(properties) as p
where id = %(id)s
union all
select i.key, null, null, i.value
from profile_records, jsonb_each_text(invalid) as i
where id = %(id)s and not properties ? i.key
order by property;

-- name: top_records_by_property
-- The records with the highest numeric value of a property (ltv, purchases, ...).
select id, user_id, (properties ->> %(property)s)::numeric as value
from profile_records
where jsonb_typeof(properties -> %(property)s) = 'number'
order by value desc, id
limit %(limit)s;

-- name: record_counts
-- How many records there are, how many identified and how many still anonymous, and how
-- many devices the identified ones hold.
select
    count(*) as records,
    count(user_id) as identified,
    count(*) - count(user_id) as anonymous,
    coalesce(sum(cardinality(anonymous_ids)) filter (where user_id is not null), 0) as devices
from profile_records;

-- name: property_problems
-- For each property, how many records have a value left out for not fitting its type.
select i.key as property, count(*) as records, min(i.value) as example
from profile_records, jsonb_each_text(invalid) as i
group by i.key
order by records desc, property;
