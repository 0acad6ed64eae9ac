-- expect: prohibited-column
SELECT upper(id_number) FROM residents
