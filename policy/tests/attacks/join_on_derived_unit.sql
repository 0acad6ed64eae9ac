-- expect: join-condition
SELECT r.district, COUNT(*) FROM (SELECT person_id * 2 AS p, cost FROM health_visits) h JOIN residents r ON h.p = r.person_id GROUP BY r.district
