-- expect: conditional-rows
SELECT (SELECT MAX(annual_income) FROM residents) AS top
