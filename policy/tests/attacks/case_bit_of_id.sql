-- expect: prohibited-column
SELECT COUNT(*) FROM residents WHERE CASE WHEN substr(id_number, 18, 1) = 'X' THEN true ELSE false END
