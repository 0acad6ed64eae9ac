-- expect: group-key-expression
SELECT annual_income / 10000, COUNT(*) FROM residents GROUP BY annual_income / 10000
