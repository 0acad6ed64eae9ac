-- expect: non-dp-aggregate
SELECT MAX(annual_income) FROM residents
