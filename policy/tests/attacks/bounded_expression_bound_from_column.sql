-- expect: derived-column
SELECT district, SUM(LEAST(GREATEST(annual_income, 0), annual_income)) FROM residents GROUP BY district
