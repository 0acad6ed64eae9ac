-- expect: having
SELECT district, COUNT(*) FROM residents GROUP BY district HAVING MAX(annual_income) > 900000
