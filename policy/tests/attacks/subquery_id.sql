-- expect: prohibited-column
SELECT x FROM (SELECT id_number AS x FROM residents) s
