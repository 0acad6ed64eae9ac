-- expect: prohibited-column
SELECT COUNT(*) FROM residents r WHERE EXISTS (SELECT 1 FROM residents s WHERE s.id_number = '110101199001011234')
