-- expect: non-dp-aggregate
SELECT district, MAX(annual_income) AS richest FROM residents GROUP BY district
