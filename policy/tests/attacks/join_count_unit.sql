-- expect: prohibited-column
SELECT r.district, COUNT(h.person_id) FROM health_visits h JOIN residents r ON h.person_id = r.person_id GROUP BY r.district
