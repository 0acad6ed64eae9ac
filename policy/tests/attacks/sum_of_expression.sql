-- expect: derived-column
SELECT SUM(annual_income * 1000) FROM residents
