-- expect: prohibited-column
SELECT id_number AS x FROM residents
