-- expect: prohibited-column
-- The privacy unit used to filter, after a legitimate join.
SELECT r.district, COUNT(*) FROM health_visits h JOIN residents r ON h.person_id = r.person_id WHERE h.person_id < 100 GROUP BY r.district
