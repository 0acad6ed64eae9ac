-- expect: prohibited-column
SELECT gender FROM residents ORDER BY name
