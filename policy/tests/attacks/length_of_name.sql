-- expect: prohibited-column
SELECT district, AVG(length(name)) FROM residents GROUP BY district
