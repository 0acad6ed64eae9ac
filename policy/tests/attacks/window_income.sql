-- expect: conditional-rows
SELECT SUM(annual_income) OVER (PARTITION BY district) FROM residents
