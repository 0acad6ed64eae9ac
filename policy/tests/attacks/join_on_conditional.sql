-- expect: join-condition
SELECT r.district, COUNT(*) FROM health_visits h JOIN residents r ON h.cost = r.annual_income GROUP BY r.district
