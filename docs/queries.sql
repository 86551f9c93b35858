-- Analyst queries over the Postgres materialization (SPEC section 5).
-- Parameters are psycopg-style `%(name)s` placeholders; `load_queries` in
-- materializations/postgres/queries.py reads this file by the `-- name:` lines.
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

-- Groups (SPEC 8.4, 8.5): a group is a segment of vendor groupVendor (catalog `profiles:`, 100
-- as shipped) in segment_memberships, whose user_id is the record's id (profile_records.id).
-- The group's segment events are its membership changes, so a member's segment_toggles are its
-- leaves and re-joins (a first join is never a toggle: it is the membership's `first`).

-- name: group_members
-- A group's members now, each with one of its record's properties (jsonb, typed), e.g. the
-- members of vip with their email. A member whose record has no value for it, or whose row
-- is not (or no longer) in profile_records, is listed with null: the list is the group's.
select m.user_id as id, r.properties -> %(property)s as value
from segment_memberships as m
left join profile_records as r on r.id = m.user_id
where m.vendor = %(vendor)s and m.segment_name = %(group)s and m.member
order by m.user_id;

-- name: record_groups
-- A record's groups now (those it is a member of in segment_memberships, by name) and its
-- properties. The groups are segment_memberships', as in the other group queries; the
-- record's own `groups` column names the same ones as of its last write, ahead of them while
-- the membership changes are on their way through segment/events.
select
    r.id,
    array(
        select m.segment_name
        from segment_memberships as m
        where m.vendor = %(vendor)s and m.user_id = r.id and m.member
        order by m.segment_name
    ) as groups,
    r.properties
from profile_records as r
where r.id = %(id)s;

-- name: group_sizes
-- For each group of the vendor, how many records are members now (0 once everyone left; a
-- group nobody ever joined has no rows, so it is not listed).
select segment_name as group_name, count(*) filter (where member) as members
from segment_memberships
where vendor = %(vendor)s
group by segment_name
order by segment_name;

-- name: recent_group_joins
-- Records whose current membership of a group began in the last day (24 hours), newest
-- first: members now whose latest join is at most a day old, be it their first (`first`) or
-- a re-join after leaving (a joining toggle; `rejoined` says which). So a record in the group
-- for a month that left yesterday and came back an hour ago is listed, joined an hour ago; one
-- that joined today and has left again is not (it is no member); one whose latest join is
-- older is not, however recently it changed otherwise. `first` alone would miss re-joins, and
-- `last` is the latest event of either kind (a repeated join, which is not a toggle, moves
-- it too).
with rejoins as (
    select segment_name, user_id, max(timestamp) as at
    from segment_toggles
    where vendor = %(vendor)s and not remove and timestamp > now() - interval '24 hours'
    group by segment_name, user_id
)
select
    m.segment_name as group_name,
    m.user_id as id,
    coalesce(j.at, m.first) as joined_at,
    j.at is not null as rejoined
from segment_memberships as m
left join rejoins as j using (segment_name, user_id)
where m.vendor = %(vendor)s and m.member
    and coalesce(j.at, m.first) > now() - interval '24 hours'
order by joined_at desc, group_name, id;
