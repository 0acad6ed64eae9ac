-- expect: prohibited-column
SELECT district, SUM(LEAST(GREATEST(CAST(SUBSTR(id_number, 7, 4) AS BIGINT), 1900), 2030)) FROM residents GROUP BY district
