-- expect: non-dp-aggregate
SELECT district, MIN(annual_income) FROM residents GROUP BY district
