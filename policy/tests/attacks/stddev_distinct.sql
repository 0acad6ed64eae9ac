-- expect: aggregate-modifier
SELECT stddev(DISTINCT annual_income) FROM residents
