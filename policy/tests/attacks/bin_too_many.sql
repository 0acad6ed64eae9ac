-- expect: too-many-bins
SELECT FLOOR(annual_income / 2) * 2 AS band, COUNT(*) FROM residents GROUP BY FLOOR(annual_income / 2) * 2
