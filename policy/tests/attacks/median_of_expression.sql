-- expect: derived-column
SELECT median(annual_income * 2) FROM residents
