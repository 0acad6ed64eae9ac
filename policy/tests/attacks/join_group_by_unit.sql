-- expect: prohibited-column
SELECT h.person_id, COUNT(*) FROM health_visits h JOIN residents r ON h.person_id = r.person_id GROUP BY h.person_id
