-- expect: prohibited-column
SELECT COUNT(*) FROM residents WHERE id_number LIKE '110101%'
