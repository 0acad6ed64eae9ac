-- expect: non-dp-aggregate
SELECT stddev(annual_income) FROM residents
