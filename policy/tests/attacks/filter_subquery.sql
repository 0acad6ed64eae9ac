-- expect: aggregate-input
SELECT COUNT(*) FROM residents WHERE district IN (SELECT district FROM residents WHERE annual_income > 900000)
