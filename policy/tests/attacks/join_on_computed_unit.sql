-- expect: join-condition
SELECT r.district, COUNT(*) FROM health_visits h JOIN residents r ON h.person_id + 1 = r.person_id GROUP BY r.district
