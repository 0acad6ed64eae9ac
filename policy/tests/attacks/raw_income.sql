-- expect: conditional-raw
SELECT district, annual_income FROM residents
