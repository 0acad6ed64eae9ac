-- expect: join-condition
SELECT r.district, COUNT(*) FROM health_visits h JOIN residents r ON h.person_id = r.person_id OR r.annual_income > 0 GROUP BY r.district
