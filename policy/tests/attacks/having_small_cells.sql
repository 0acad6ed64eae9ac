-- expect: having
SELECT district, COUNT(*) AS n FROM residents GROUP BY district HAVING COUNT(*) < 5
