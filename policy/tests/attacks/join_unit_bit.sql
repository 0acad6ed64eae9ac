-- expect: prohibited-column
-- One bit of the unit, summed.
SELECT r.district, SUM(CASE WHEN h.person_id % 2 = 0 THEN 1 ELSE 0 END) FROM health_visits h JOIN residents r ON h.person_id = r.person_id GROUP BY r.district
