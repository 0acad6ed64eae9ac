-- expect: conditional-rows
SELECT annual_income FROM residents UNION SELECT annual_income FROM residents
