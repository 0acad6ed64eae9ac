-- expect: prohibited-column
SELECT district, COUNT(person_id) FROM residents GROUP BY district
