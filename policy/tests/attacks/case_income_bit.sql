-- expect: conditional-raw
SELECT CASE WHEN annual_income > 100000 THEN 1 ELSE 0 END AS rich, annual_income FROM residents
