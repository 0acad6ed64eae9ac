-- expect: prohibited-column
-- Old-style join: the unit appears in WHERE, not in a JOIN condition.
SELECT r.district, COUNT(*) FROM health_visits h, residents r WHERE h.person_id = r.person_id GROUP BY r.district
