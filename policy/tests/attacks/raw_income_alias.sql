-- expect: conditional-raw
SELECT annual_income AS salary FROM residents
