-- expect: conditional-rows
SELECT first_value(annual_income) OVER (ORDER BY annual_income DESC) FROM residents
