-- expect: aggregate-input
SELECT r.district, COUNT(*) FROM residents r WHERE r.person_id IN (SELECT person_id FROM health_visits) GROUP BY r.district
