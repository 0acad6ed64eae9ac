-- expect: bin-width
SELECT FLOOR(annual_income / 0.5) * 0.5 AS band, COUNT(*) FROM residents GROUP BY FLOOR(annual_income / 0.5) * 0.5
