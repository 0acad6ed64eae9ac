-- expect: aggregate-modifier
SELECT COUNT(DISTINCT annual_income) FROM residents
