-- expect: prohibited-column
SELECT id_number FROM residents
